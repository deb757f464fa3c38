"""Planning: pre-flight checks of the input and export, cutting the input into partitions, and the plan saved across runs."""
