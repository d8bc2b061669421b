import sys

from detcore.cli.main import main

status = main()
if status and "torch.distributed" in sys.modules:
    from detcore.engine.dist import exit_now, launched_worker

    if launched_worker():
        exit_now(status)  # a failed worker of a launched job: no slow teardown
raise SystemExit(status)
