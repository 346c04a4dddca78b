"""Serving TensorBoard on a log folder."""

import time


def serve(logdir, host="127.0.0.1", port=6006, echo=print):
    """Starts a TensorBoard server in this process, prints its URL, and blocks until Ctrl-C."""
    from tensorboard import program

    from keras_cifar.errors import KerasCifarError

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", logdir, "--host", host, "--port", str(port)])
    try:
        url = board.launch()
    except program.TensorBoardServerException as error:  # port in use, address not available
        raise KerasCifarError(f"TensorBoard could not start on {host}:{port}: {error.msg} "
                              "Choose another `port` (0 picks a free one).") from None
    echo(f"TensorBoard {url} (serving {logdir}; Ctrl-C stops it)")
    while True:
        time.sleep(3600)
