"""tf.data service: decode and augment on other machines, train on this one.

When decoding (JPEG / PNG of paper-size sets) and augmentation cannot keep
the accelerators busy, `tf.data.experimental.service` runs the input pipeline
on a cluster of CPU workers: one dispatcher, any number of workers, and the
trainer reads finished batches from them over gRPC.

Start the servers (each command blocks until it is killed):

    # one dispatcher (with --work_dir it journals its state and survives restarts)
    python -m tfcell.data.service dispatcher --port 5050 --work_dir /shared/dispatcher

    # one or more workers, each on a machine with CPUs and the data (or its shards)
    python -m tfcell.data.service worker --dispatcher host:5050 --port 5051 \\
        --worker_address $(hostname):5051

then train with `--config.data.service=grpc://host:5050` (the harness applies
`distribute` to training datasets only; validation, test and prediction stay
local) and, for inputs that do not fit in memory,
`--config.data.storage=tfrecord` or `files` (the dataset graph is sent to the
workers: with `storage="memory"` it would carry every decoded image).

`--worker_address` is the address the dispatcher gives clients for this worker:
TF's default, `localhost:<port>`, works only when the trainer runs on the
worker's machine. Workers keep no state of their own (a restarted worker
registers again); the dispatcher is fault tolerant with `--work_dir`.

Following the TF guide, `distribute` goes at the end of the pipeline (after
decode, augmentation and `batch`, so whole batches travel) with a `prefetch`
after it. Processing modes:

- "distributed_epoch" (default; TF's `ShardingPolicy.DYNAMIC`): the dispatcher
  hands out the source's elements (file names, row indices) to the workers, so
  an epoch sees every image once, as without the service; the order across
  workers is not deterministic.
- "parallel_epochs" (`ShardingPolicy.OFF`): every worker produces the whole
  dataset, so an epoch holds each image once per worker.
"""

import argparse
import logging
import sys

import tensorflow as tf

__all__ = ["PROCESSING_MODES", "distribute", "main", "start_dispatcher", "start_worker"]

logger = logging.getLogger("tfcell.data")

PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")


def distribute(dataset, service, job_name=None, processing_mode="distributed_epoch"):
    """Moves a dataset's processing to the tf.data service.

    Args:
        dataset: the finished input pipeline (decoded, augmented, batched).
        service: the dispatcher, "grpc://host:port".
        job_name: a name shared by several trainers that should read one job
            (each element goes to one of them); None: a new job per iteration
            (per epoch), which is what one trainer wants.
        processing_mode: "distributed_epoch" or "parallel_epochs" (see the
            module docstring).

    Returns:
        The dataset read from the service, prefetched, with the input's
        `id_maps` (and `metadata`) attributes.

    Example:

    ```python
    train = tfcell.data.read_shards(directory, "train", 224, batch_size=64, shuffle=True)
    train = tfcell.data.service.distribute(train, "grpc://dispatcher:5050")
    ```
    """
    if processing_mode not in PROCESSING_MODES:
        raise ValueError(
            f"processing_mode must be one of {PROCESSING_MODES}; received {processing_mode!r}."
        )
    if not isinstance(service, str) or not service.strip():
        raise ValueError(
            "service must be the dispatcher's address, e.g. 'grpc://host:5050'; "
            f"received {service!r}. Start one with `python -m tfcell.data.service dispatcher`."
        )
    out = dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=processing_mode, service=service, job_name=job_name
        )
    ).prefetch(tf.data.AUTOTUNE)
    for name in ("id_maps", "metadata"):
        if hasattr(dataset, name):
            setattr(out, name, getattr(dataset, name))
    return out


def start_dispatcher(port=5050, work_dir=None):
    """Starts a `tf.data.experimental.service.DispatchServer` in this process.

    Args:
        port: the port to bind (0: any free port; see `server.target`).
        work_dir: a folder for the dispatcher's journal; with it the dispatcher
            runs in fault-tolerant mode and recovers its jobs after a restart.

    Returns:
        The running server (`.target` is "grpc://localhost:<port>").
    """
    config = tf.data.experimental.service.DispatcherConfig(
        port=int(port), work_dir=work_dir, fault_tolerant_mode=bool(work_dir)
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher, port=5051, worker_address=None):
    """Starts a `tf.data.experimental.service.WorkerServer` in this process.

    Args:
        dispatcher: the dispatcher's "host:port" (a "grpc://" prefix is removed).
        port: the port to bind (0: any free port).
        worker_address: "host:port" the dispatcher gives clients for this
            worker (`%port%` stands for the bound port); default
            "localhost:%port%", which only a client on this machine can reach.

    Returns:
        The running server.
    """
    address = dispatcher.split("://", 1)[-1]
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=address, worker_address=worker_address, port=int(port)
    )
    return tf.data.experimental.service.WorkerServer(config)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m tfcell.data.service",
        description="Starts a tf.data service dispatcher or worker and blocks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dispatcher = commands.add_parser("dispatcher", help="the coordinator (one per cluster)")
    dispatcher.add_argument("--port", type=int, default=5050)
    dispatcher.add_argument(
        "--work_dir", default=None, help="journal folder: fault-tolerant, survives restarts"
    )
    worker = commands.add_parser("worker", help="a server that runs input pipelines")
    worker.add_argument("--dispatcher", required=True, help="the dispatcher's host:port")
    worker.add_argument("--port", type=int, default=5051)
    worker.add_argument(
        "--worker_address",
        default=None,
        help="host:port clients reach this worker at (default localhost:%%port%%)",
    )
    return parser


def main(argv=None, join=True):
    """The command line (see the module docstring); with `join=False` it
    returns the started server instead of blocking (for tests)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "dispatcher":
        server = start_dispatcher(args.port, args.work_dir)
        logger.info("tf.data service dispatcher at %s", server.target)
    else:
        server = start_worker(args.dispatcher, args.port, args.worker_address)
        logger.info("tf.data service worker on port %d -> %s", args.port, args.dispatcher)
    if not join:
        return server
    server.join()
    return None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
