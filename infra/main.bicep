// One command, secure by default: `azd up` provisions everything below, deploys the app, and the
// postdeploy hook (hooks/postdeploy.sh) then subscribes the blob trigger to Event Grid (blob-subscription.bicep),
// which can only happen once the app code is running (see docs/deploy.md, "Why the Event Grid subscription
// comes last").
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name: names the resource group and seeds every generated resource name.')
param environmentName string

@minLength(1)
@description('Azure region for every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object ID of the person deploying (azd fills in AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer on the vault and Storage Blob Data Contributor on the storage account, for `python -m exporter connections|exports` (the one-time Constant Contact authorization) and the Customer Insights connection. Empty: no human access is granted.')
param principalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
@description('Kind of principal principalId is (a CI pipeline deploying with a service principal sets ServicePrincipal).')
param principalType string = 'User'

@description('Object ID of the "Dynamics 365 AI for Customer Insights" service principal in this tenant (application ID 0bfc4568-a4ba-4c58-bd3e-5d3e76bd7fff). Gets Storage Blob Data Contributor on the segments container, so Customer Insights can export into it. Empty: grant it later (docs/deploy.md).')
param customerInsightsPrincipalId string = ''

@description('Application (client) ID of the Entra app registration that fronts the management API (App Service authentication, app roles Exporter.Admin/Contributor/Viewer). Empty: App Service authentication stays off and the management API answers 401 to everyone; operators use the CLI. See docs/deploy.md.')
param authClientId string = ''

@description('Tenant of that app registration.')
param authTenantId string = tenant().tenantId

// -- names (empty: generated from the environment name) ----------------------------------------------
param resourceGroupName string = ''
param functionAppName string = ''
param appServicePlanName string = ''
param storageAccountName string = ''
param keyVaultName string = ''
param logAnalyticsName string = ''
param applicationInsightsName string = ''
param identityName string = ''

// -- app ---------------------------------------------------------------------------------------------
@description('NCRONTAB schedule (six fields, UTC) of the timer that resumes pending runs and starts scheduled exports.')
param exportTimerSchedule string = '0 */5 * * * *'

@minValue(40)
@maxValue(1000)
@description('Upper bound on Flex Consumption instances. Constant Contact allows 4 requests/second per application, so more instances only buy more 429 answers: keep this at the floor.')
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
@description('Memory per instance in MB.')
param instanceMemoryMB int = 2048

// -- storage and vault ---------------------------------------------------------------------------------
@allowed(['Standard_GRS', 'Standard_RAGRS', 'Standard_GZRS', 'Standard_RAGZRS', 'Standard_ZRS', 'Standard_LRS'])
@description('Storage redundancy. Run checkpoints live here, so the default keeps a copy in the paired region.')
param storageSku string = 'Standard_GRS'

@description('Blob versioning: the blob trigger processes each version of a segment file once.')
param enableBlobVersioning bool = true

@description('Blob soft delete. Off by default: Customer Insights - Data exports fail on accounts with blob soft delete on (its documented limitation). Container soft delete stays on.')
param enableBlobSoftDelete bool = false

@minValue(7)
@maxValue(90)
@description('Days a deleted Key Vault (and its secrets) stays recoverable. Purge protection is always on, so a vault name is blocked for this long after `azd down`.')
param keyVaultSoftDeleteRetentionDays int = 90

@allowed(['Enabled', 'Disabled'])
@description('Key Vault public network access. Disabled needs a private endpoint and VNet integration, which this template does not create.')
param keyVaultPublicNetworkAccess string = 'Enabled'

@minValue(30)
@maxValue(730)
@description('Log Analytics retention in days.')
param logRetentionDays int = 30

param segmentsContainer string = 'segments'
param resultsContainer string = 'results'
param stateContainer string = 'state'

var abbrs = {
  resourceGroup: 'rg-'
  functionApp: 'func-'
  plan: 'plan-'
  storage: 'st'
  keyVault: 'kv-'
  logAnalytics: 'log-'
  appInsights: 'appi-'
  identity: 'id-'
  systemTopic: 'evgt-'
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var appName = !empty(functionAppName) ? functionAppName : '${abbrs.functionApp}${resourceToken}'
// Flex pulls the app package from this container; one per app, named after it.
var deploymentContainer = 'app-package-${take(appName, 32)}-${take(resourceToken, 7)}'
var systemTopicName = '${abbrs.systemTopic}${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: !empty(identityName) ? identityName : '${abbrs.identity}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.logAnalytics}${resourceToken}'
    applicationInsightsName: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.appInsights}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storage}${resourceToken}'
    location: location
    tags: tags
    sku: storageSku
    containers: [segmentsContainer, resultsContainer, stateContainer, deploymentContainer]
    enableVersioning: enableBlobVersioning
    enableBlobSoftDelete: enableBlobSoftDelete
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVault}${resourceToken}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionDays
    publicNetworkAccess: keyVaultPublicNetworkAccess
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

// Exactly the four roles the app's identity needs, and nothing for anyone else unless asked for.
module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    segmentsContainer: segmentsContainer
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
    customerInsightsPrincipalId: customerInsightsPrincipalId
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: appName
    planName: !empty(appServicePlanName) ? appServicePlanName : '${abbrs.plan}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    deploymentContainer: deploymentContainer
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    keyVaultUri: vault.outputs.uri
    exportTimerSchedule: exportTimerSchedule
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    segmentsContainer: segmentsContainer
    resultsContainer: resultsContainer
    stateContainer: stateContainer
    authClientId: authClientId
    authTenantId: authTenantId
  }
  // The host reads its storage and the package container with the identity at first start.
  dependsOn: [roles]
}

// The system topic needs no app code; its subscription does (blob-subscription.bicep, run by the hook).
module events 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    name: systemTopicName
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
  }
}

// -- outputs: azd stores them in .azure/<env>/.env; the postdeploy hook reads several ---------------
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_FUNCTION_APP_URL string = app.outputs.url
output EXPORTER_API_URL string = '${app.outputs.url}/api'
output OAUTH_REDIRECT_URI string = app.outputs.oauthRedirectUri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output AZURE_KEY_VAULT_URL string = vault.outputs.uri
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.logAnalyticsId
output EVENTGRID_SYSTEM_TOPIC_NAME string = events.outputs.name
output SEGMENTS_CONTAINER string = segmentsContainer
output RESULTS_CONTAINER string = resultsContainer
output STATE_CONTAINER string = stateContainer
