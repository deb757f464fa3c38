"""Pure status derivation: observed children and runner progress in, status and actions out."""
