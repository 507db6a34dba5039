from runas_agent.cli import main

raise SystemExit(main())
