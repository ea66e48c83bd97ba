// Where Azure users look: a Log Analytics workspace and a workspace-based Application Insights component.
// Local (instrumentation-key) ingestion is off: the app sends telemetry with its managed identity, which
// holds Monitoring Metrics Publisher on this component (roles.bicep).
param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
  }
}

output logAnalyticsId string = workspace.id
output logAnalyticsName string = workspace.name
output applicationInsightsName string = appInsights.name
output applicationInsightsId string = appInsights.id
// Not a secret: with local auth disabled, the instrumentation key alone cannot send telemetry.
output applicationInsightsConnectionString string = appInsights.properties.ConnectionString
