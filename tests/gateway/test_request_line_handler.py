"""The request log's batching handler: the lines as logged, one write per batch, nothing lost at exit."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from gateway.cli.context import setup_logging
from gateway.observability.requestlog import REQUEST_LOGGER, RequestLineHandler, RequestLog


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_lines_leave_in_one_write_per_batch() -> None:
    stream = CountingStream()
    handler = RequestLineHandler(stream, flush_s=0.05, max_lines=100)
    logger = _logger(handler, "test.requestlines.batch")
    for i in range(10):
        logger.info('{"n": %d}', i)
    assert stream.writes == 0  # within the batch's window nothing was written yet
    await asyncio.sleep(0.15)
    assert stream.writes == 1
    assert stream.getvalue() == "".join(f'{{"n": {i}}}\n' for i in range(10))
    for i in range(250):  # max_lines flushes at once, without waiting for the timer
        logger.info("x%d", i)
    assert stream.writes == 3 and stream.getvalue().count("\n") == 210
    handler.close()  # what is left goes out at exit
    assert stream.writes == 4 and stream.getvalue().endswith("x249\n") and stream.getvalue().count("\n") == 260


def test_without_an_event_loop_each_line_is_written_at_once() -> None:
    stream = CountingStream()
    logger = _logger(RequestLineHandler(stream), "test.requestlines.sync")
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == "one\ntwo\n" and stream.writes == 2


def test_setup_logging_gives_the_request_log_its_handler_once() -> None:
    logger = logging.getLogger(REQUEST_LOGGER)
    saved = (list(logger.handlers), logger.propagate)
    try:
        logger.handlers = []
        setup_logging()
        setup_logging()
        assert [type(h) for h in logger.handlers] == [RequestLineHandler] and logger.propagate is False
    finally:
        logger.handlers, logger.propagate = saved


def test_the_request_log_writes_straight_into_its_line_handler() -> None:
    logger = logging.getLogger(REQUEST_LOGGER)
    saved = (list(logger.handlers), logger.propagate, logger.level)
    stream = CountingStream()
    try:
        logger.handlers, logger.propagate = [RequestLineHandler(stream)], False
        logger.setLevel(logging.INFO)
        direct = RequestLog(True)
        direct.write("req_1", "chat", 200, 0.0125, None, None)
        line = orjson.loads(stream.getvalue())
        assert line["request_id"] == "req_1" and line["status"] == 200 and line["duration_ms"] == 12.5
        logger.propagate = True  # another handler may see the records: through the logger
        assert RequestLog(True)._direct is None
    finally:
        logger.handlers, logger.propagate, logger.level = saved
