/* testing — `eddy test`: runs pipeline test files, and the driver they
 * build pipelines with.  Each test file runs in a Lua state of its own
 * (lua/eddy/testing.lua: T.test, T.eq, the runner); T.driver builds the
 * real plan, tasks, channels, state store (RocksDB in a temporary folder)
 * and VMs of a pipeline, with every source an in-memory one and every sink
 * an in-memory one (source_memory.h), and steps its tasks on the caller's
 * thread in a fixed order until nothing more happens: no worker threads, no
 * event loop, no Kafka, and processing time is the driver's virtual clock
 * (clock_set).  So a test gives the same result on every run and machine.
 * The run itself is driver.c's; this unit adds the virtual clock, the
 * watchdog thread and the Lua natives.  Calls driver, config, pipeline,
 * task, state, codec and LuaJIT. */
#ifndef EDDY_TESTING_H
#define EDDY_TESTING_H

/* `eddy test [PATH...]`: runs the test files (a PATH is a *_test.lua file
 * or a folder searched for them; default: the current folder), prints a
 * line per test and `N passed, N failed`.  Returns the exit code: 0 all
 * passed, 1 a test failed, 2 a file did not load or no test file found. */
int testing_main(int argc, char **argv);

#endif
