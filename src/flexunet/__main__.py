from flexunet.cli.main import main

raise SystemExit(main())
