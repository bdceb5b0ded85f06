"""`await task` for asyncio: the task's thread tells the event loop when it is done."""

import asyncio


def wait(task):
    """The iterator `Task.__await__` returns: yields to the event loop until the task
    is complete, then returns `task.join()` (the report, or raises its VhdError).
    Cancelling the awaiting coroutine cancels the task."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle():
        if not future.done():
            try:
                future.set_result(task.join())
            except Exception as failure:  # the task's VhdError
                future.set_exception(failure)

    def completed():  # in the task's waiter thread
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop was closed meanwhile: nobody is waiting
            pass

    def done(f):
        if f.cancelled():
            task.cancel()

    future.add_done_callback(done)
    task._when_complete(completed)
    return (yield from future)
