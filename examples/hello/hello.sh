#!/bin/sh
cat /app/greeting.txt /app/build-info
