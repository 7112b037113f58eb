from receiver.sweeper.process import main

raise SystemExit(main())
