from sluice_collector.cli import main

raise SystemExit(main())
