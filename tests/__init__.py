"""Test suite of datajuicer-operator."""
