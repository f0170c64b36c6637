from vnfkit.cli import main

raise SystemExit(main())
