#!/bin/bash
# Healthy = the AMQP listener answers a protocol header with Connection.Start (frame type 1, channel 0).
# The stack's user is loaded before the listener opens (entrypoint.sh), so this also means a client can
# log in. Cheap enough to run every few seconds: `rabbitmq-diagnostics ping` boots an Erlang VM (about a
# CPU-second) on each call.
exec 3<>/dev/tcp/127.0.0.1/5672 || { echo "AMQP port 5672 closed"; exit 1; }
printf 'AMQP\x00\x00\x09\x01' >&3
frame=$(timeout 3 head -c 3 <&3 | od -An -tx1 | tr -d ' \n')
[ "$frame" = "010000" ] || { echo "no Connection.Start from the broker (got '$frame')"; exit 1; }
