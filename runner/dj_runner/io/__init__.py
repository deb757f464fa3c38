"""Data in and out: finding and streaming the input, Arrow values as JSON, one schema for tables built in pieces, the export."""
