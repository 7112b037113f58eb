from receiver.worker.process import main

main()
