from vitdata.cli import main

raise SystemExit(main())
