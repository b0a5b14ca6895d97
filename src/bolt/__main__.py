from bolt.cli import main

raise SystemExit(main())
