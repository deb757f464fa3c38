"""The DataJuicerJob API: constants, typed spec with defaults, validation, the CRD schema."""
