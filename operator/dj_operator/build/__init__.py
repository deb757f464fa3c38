"""Pure builders: a job (and its parsed spec) in, the manifest dict of each child out."""
