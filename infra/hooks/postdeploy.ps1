# azd postdeploy hook (Windows): the same steps as postdeploy.sh; see there for why this runs after deploy.
$ErrorActionPreference = 'Stop'

foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'EVENTGRID_SYSTEM_TOPIC_NAME') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        throw "postdeploy: $name is not set; run through azd (azd up / azd deploy)."
    }
}
$rg = $env:AZURE_RESOURCE_GROUP
$app = $env:AZURE_FUNCTION_APP_NAME
$topic = $env:EVENTGRID_SYSTEM_TOPIC_NAME
$container = if ($env:SEGMENTS_CONTAINER) { $env:SEGMENTS_CONTAINER } else { 'segments' }
$waitSeconds = if ($env:BLOB_KEY_WAIT_SECONDS) { [int]$env:BLOB_KEY_WAIT_SECONDS } else { 300 }

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    throw 'postdeploy: the Azure CLI (az) is required; install it, run az login, then: azd hooks run postdeploy'
}
if ($env:AZURE_SUBSCRIPTION_ID) { az account set --subscription $env:AZURE_SUBSCRIPTION_ID }

Write-Host "postdeploy: waiting for the blobs_extension key of $app (up to ${waitSeconds}s)"
$waited = 0
while ($true) {
    $present = az functionapp keys list -g $rg -n $app --query "contains(keys(systemKeys), 'blobs_extension')" -o tsv 2>$null
    if ($present -eq 'true') { break }
    if ($waited -ge $waitSeconds) {
        throw "postdeploy: no blobs_extension key after ${waitSeconds}s; check the deployment, then: azd hooks run postdeploy"
    }
    Start-Sleep -Seconds 10
    $waited += 10
}

$template = Join-Path (Split-Path -Parent $PSScriptRoot) 'blob-subscription.bicep'
Write-Host "postdeploy: subscribing $app to BlobCreated in container $container"
az deployment group create `
    --resource-group $rg `
    --name blob-trigger-subscription `
    --template-file $template `
    --parameters functionAppName=$app systemTopicName=$topic segmentsContainer=$container `
    --only-show-errors --output none
if ($LASTEXITCODE -ne 0) { throw 'postdeploy: the Event Grid subscription deployment failed' }
Write-Host "postdeploy: done. New files in '$container' now trigger segment_arrived."
