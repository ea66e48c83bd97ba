// The Event Grid subscription that feeds the Flex Consumption blob trigger (segment_arrived, source EventGrid).
//
// Deployed AFTER the app code, by hooks/postdeploy.sh (azd's postdeploy hook), not by main.bicep: the webhook
// URL carries the host's `blobs_extension` system key, and the host creates that key only once it has loaded a
// function with a blob trigger, i.e. after `azd deploy`. Deploying it with main.bicep on a fresh environment
// would fail in listKeys. Re-running it is harmless (same name, same properties).
//
// The key is read here with listKeys, inside the deployment, so it never passes through a shell, a command
// line or a deployment output.
targetScope = 'resourceGroup'

@description('The function app (output AZURE_FUNCTION_APP_NAME of main.bicep).')
param functionAppName string

@description('The storage account\'s Event Grid system topic (output EVENTGRID_SYSTEM_TOPIC_NAME of main.bicep).')
param systemTopicName string

@description('The container Customer Insights exports segments into (output SEGMENTS_CONTAINER).')
param segmentsContainer string = 'segments'

@description('The blob-triggered function, as named in function_app.py.')
param functionName string = 'segment_arrived'

param subscriptionName string = 'segments-to-${functionName}'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${listKeys('${site.id}/host/default', '2024-04-01').systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${segmentsContainer}/blobs/'
      enableAdvancedFilteringOnArrays: true
    }
    // Event Grid retries for a day; a segment missed after that is picked up by re-running the export
    // (POST /api/exports/{name}/runs).
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output name string = subscription.name
