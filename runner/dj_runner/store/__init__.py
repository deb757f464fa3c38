"""The work dir's durable state: its layout (paths only), crash-safe writes, checkpoints, the writer lock, fencing and the job manifest."""
