from remotecell.backend.runner._main import main

raise SystemExit(main())
