"""What the job tells the world: the JSONL event log, status.json, Prometheus metrics, reports, the console progress and the Kubernetes status reporter."""
