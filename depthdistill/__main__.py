"""``python -m depthdistill``: the same as the ``depthdistill`` command."""

from depthdistill.cli import main

raise SystemExit(main())
