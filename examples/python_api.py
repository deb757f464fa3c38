"""Run a recipe from Python and read its events, as Data-Juicer's partitioned executor does.

    python examples/python_api.py --config examples/recipe.yaml [--work_dir DIR]

Prints the events as they were logged, any op errors, the per-op performance summary with its
resource figures, and the status report; exits with the job's exit code.
"""

from __future__ import annotations

import sys

from dj_runner.api import EventType, PartitionedRayExecutor, init_configs


def main() -> int:
    cfg = init_configs()  # --config PATH [--job_id ID] [--work_dir DIR], as Data-Juicer reads them
    executor = PartitionedRayExecutor(cfg)
    result = executor.run()

    for event in executor.monitor_events():  # ends with the job's last event
        print(f"[{event.timestamp:.3f}] {event.event_type.value}: {event.message}")

    for event in executor.get_events(event_type=EventType.OPERATION_ERROR):
        print(f"Error in {event.operation_name}: {event.error_message}")

    perf = executor.get_performance_summary()
    for op in perf["ops"]:
        print(
            f"{op['op_name']}: {op['rows_in']} -> {op['rows_out']} rows in {op['seconds']:.3f}s, "
            f"{op['cpu_time_s']:.3f} CPU s, peak RSS {op['peak_rss_bytes'] / 2**20:.0f} MiB"
        )
    print(executor.generate_status_report())
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
