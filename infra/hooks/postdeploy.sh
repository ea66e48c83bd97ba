#!/bin/sh
# azd postdeploy hook: subscribe the blob trigger to the storage account's Event Grid system topic.
#
# Why here and not in main.bicep: the subscription's webhook URL needs the host's `blobs_extension` system key,
# which the Functions host creates only after it has loaded the deployed code (a blob trigger with source
# EventGrid). So: provision (main.bicep) -> deploy the code -> wait for the key -> blob-subscription.bicep.
# Idempotent: `azd up` / `azd deploy` run it every time and a second run changes nothing.
#
# Needs the Azure CLI (az), signed in to the same tenant and subscription as azd (`az login`).
# The key is read by the Bicep deployment itself (listKeys); this script only checks that it exists.
set -eu

: "${AZURE_RESOURCE_GROUP:?run through azd (azd up / azd deploy), which sets the outputs of main.bicep}"
: "${AZURE_FUNCTION_APP_NAME:?missing output AZURE_FUNCTION_APP_NAME}"
: "${EVENTGRID_SYSTEM_TOPIC_NAME:?missing output EVENTGRID_SYSTEM_TOPIC_NAME}"
SEGMENTS_CONTAINER="${SEGMENTS_CONTAINER:-segments}"
WAIT_SECONDS="${BLOB_KEY_WAIT_SECONDS:-300}"

if ! command -v az >/dev/null 2>&1; then
  echo "postdeploy: the Azure CLI (az) is required to create the Event Grid subscription; install it, run" >&2
  echo "  az login, then: azd hooks run postdeploy" >&2
  exit 1
fi
if [ -n "${AZURE_SUBSCRIPTION_ID:-}" ]; then
  az account set --subscription "$AZURE_SUBSCRIPTION_ID"
fi

echo "postdeploy: waiting for the blobs_extension key of $AZURE_FUNCTION_APP_NAME (up to ${WAIT_SECONDS}s)"
waited=0
while :; do
  # Listing the keys also wakes the host, which creates the key when it indexes the blob trigger.
  present=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
    --query "contains(keys(systemKeys), 'blobs_extension')" -o tsv 2>/dev/null || echo false)
  [ "$present" = "true" ] && break
  if [ "$waited" -ge "$WAIT_SECONDS" ]; then
    echo "postdeploy: no blobs_extension key after ${WAIT_SECONDS}s. Check that the deployment succeeded" >&2
    echo "  (azd monitor --logs, or the Deployment Center), then: azd hooks run postdeploy" >&2
    exit 1
  fi
  sleep 10
  waited=$((waited + 10))
done

here=$(cd "$(dirname "$0")/.." && pwd)
echo "postdeploy: subscribing $AZURE_FUNCTION_APP_NAME to BlobCreated in container $SEGMENTS_CONTAINER"
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "blob-trigger-subscription" \
  --template-file "$here/blob-subscription.bicep" \
  --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
               systemTopicName="$EVENTGRID_SYSTEM_TOPIC_NAME" \
               segmentsContainer="$SEGMENTS_CONTAINER" \
  --only-show-errors --output none
echo "postdeploy: done. New files in '$SEGMENTS_CONTAINER' now trigger segment_arrived."
