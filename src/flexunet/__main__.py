from flexunet.cli import main

raise SystemExit(main())
