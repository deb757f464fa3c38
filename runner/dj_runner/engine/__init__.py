"""The job engine: the driver (executor), the partition scheduler and its backends, the partition task, op application, global-op decisions and the final export step."""
