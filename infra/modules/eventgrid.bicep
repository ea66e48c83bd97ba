// The storage account's Event Grid system topic. The Flex Consumption blob trigger (source: EventGrid) is fed
// by a subscription on this topic; that subscription is created after the app code is deployed, by
// ../blob-subscription.bicep, because its webhook URL carries a key that only exists then.
param name string
param location string
param tags object = {}
param storageAccountId string

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output id string = topic.id
output name string = topic.name
