"""Thin kopf handlers: observe through kube.py, derive with status/, act, write status."""
