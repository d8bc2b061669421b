from detcore.cli.main import main

raise SystemExit(main())
