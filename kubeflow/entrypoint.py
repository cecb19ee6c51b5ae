"""The container command of every step: TFX's Kubeflow V2 executor entry point, with
s3:// registered for TensorFlow and TFX's file IO (tensorflow-io), and an exit code that
says how the step went.

    python -m tfx_quantization.kubeflow.entrypoint --executor_class_path ... --json_serialized_invocation_args ...

TFX's own `kubeflow_v2_run_executor` is run unchanged (same arguments, less the KFP UI
outputs' flag: kubeflow/ui_outputs.py writes those after the executor). After S3 use, the
interpreter's teardown can abort in tensorflow-io ("pure virtual method called", exit 134)
and fail a step that succeeded; components/fsutil.py:exit_process leaves without it.
"""
import os
import sys

TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def main() -> None:
    # This is the step's program, not a library import: it puts Keras 2 in force (tfmot needs
    # it) before anything imports TensorFlow, whatever the image's environment says.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from absl import app

    from tfx_quantization import fsutil
    from tfx_quantization.kubeflow import ui_outputs

    fsutil.register_filesystems()
    argv, wanted, taken = ui_outputs.split_args(sys.argv[1:])
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as tfx_entrypoint

    code = 0
    try:
        app.run(tfx_entrypoint.main, argv=[TFX_ENTRYPOINT, *argv], flags_parser=tfx_entrypoint._parse_flags)
    except SystemExit as e:  # absl's app.run always exits
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if code == 0 and wanted:
        try:
            ui_outputs.fill(argv, wanted, taken)
        except Exception:  # the step's own outputs are written; say why the UI's are not
            import traceback

            traceback.print_exc()
            code = 1
    fsutil.exit_process(code)


if __name__ == "__main__":
    main()
