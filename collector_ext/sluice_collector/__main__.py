from sluice_collector.service.cli import main

raise SystemExit(main())
