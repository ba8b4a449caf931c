#!/bin/sh
# Healthy only when this node accepts connections AND sees all three nodes running: the
# services start once the cluster is whole, so their queues get a member on every node.
# The CLI authenticates with the cluster's cookie (RABBITMQ_CLUSTER_COOKIE).
set -eu
cookie="--erlang-cookie=${RABBITMQ_CLUSTER_COOKIE}"
rabbitmq-diagnostics -q "$cookie" check_port_connectivity >/dev/null
running=$(rabbitmqctl -q "$cookie" eval 'length(rabbit_nodes:all_running()).')
[ "$running" = "${RABBITMQ_CLUSTER_SIZE:-3}" ]
