"""keras-cifar command line. Run `python cli.py --help`."""

from keras_cifar.cli import main

if __name__ == "__main__":
    main()
