#!/bin/bash
# Runs on the first master before the other apps: label the nodes for the web tier.
set -euo pipefail
kubectl label nodes --all tier=web --overwrite
