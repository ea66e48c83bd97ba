// The app's one identity. User-assigned, so its role assignments exist before the app first starts, and
// so the same client ID can go into AzureWebJobsStorage__clientId, AZURE_CLIENT_ID and the telemetry auth.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
