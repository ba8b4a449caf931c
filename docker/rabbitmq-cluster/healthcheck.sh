#!/bin/sh
# Healthy only when this node accepts connections AND sees all three nodes running: the
# services start once the cluster is whole, so their queues get a member on every node.
set -eu
rabbitmq-diagnostics -q check_port_connectivity >/dev/null
running=$(rabbitmqctl -q eval 'length(rabbit_nodes:list_running()).')
[ "$running" = "${RABBITMQ_CLUSTER_SIZE:-3}" ]
