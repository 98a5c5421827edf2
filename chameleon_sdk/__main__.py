"""``python -m chameleon_sdk`` is the ``chameleon`` command."""

from chameleon_sdk.cli import main

raise SystemExit(main())
