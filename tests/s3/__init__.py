"""Object storage on a real S3-compatible server: the runner reading from and writing to s3://."""
