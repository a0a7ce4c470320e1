/* kafka_mock — `eddy kafka-mock`: librdkafka's mock cluster, a Kafka-protocol
 * broker on loopback for running and testing without a Kafka installation.
 * Prints the bootstrap servers on the first line of stdout and runs until
 * SIGTERM/SIGINT.  With --port P it also listens on 127.0.0.1:P and forwards
 * each connection to the first broker (the mock picks its own ports).  Calls
 * librdkafka and libevent. */
#ifndef EDDY_KAFKA_MOCK_H
#define EDDY_KAFKA_MOCK_H

/* argv after "kafka-mock".  Returns the exit code (0, 1, 2). */
int kafka_mock_main(int argc, char **argv);

#endif
