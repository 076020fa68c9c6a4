from swarmhub.cli.main import main

raise SystemExit(main())
