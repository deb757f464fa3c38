"""Tests against the real control plane (marked `k8s`)."""
