#!/bin/bash
# Generic DevGrid deployment event sender
# 1. Set variables (from CI/CD platform environment)
DEVGRID_API_KEY="${DEVGRID_API_KEY}"
DEVGRID_ENTITY_ID="${DEVGRID_ENTITY_ID}"
DEPLOYMENT_ENV="production"
BUILD_ID="${BUILD_ID:-unknown}"
COMMIT_SHA="${COMMIT_SHA:-unknown}"
BUILD_URL="${BUILD_URL:-unknown}"
INITIATOR="${INITIATOR:-system}"
# 2. Deploy your application
./deploy.sh
# 3. Capture deployment status
DEPLOY_STATUS=$?
# 4. Determine event status
if [ $DEPLOY_STATUS -eq 0 ]; then
EVENT_STATUS="success"
DESCRIPTION="Deployment successful"
else
EVENT_STATUS="failed"
DESCRIPTION="Deployment failed"
fi
# 5. Send event to DevGrid
RESPONSE=$(curl -s -w "\n%{http_code}" -X POST https://prod.api.devgrid.io/events \
-H "x-api-key: $DEVGRID_API_KEY" \
-H "Content-Type: application/json" \
-d "{
\"events\": [{
\"type\": \"event-deploy\",
\"entityId\": \"$DEVGRID_ENTITY_ID\",
\"attributes\": {
\"env\": \"$DEPLOYMENT_ENV\",
\"status\": \"$EVENT_STATUS\",
\"build_id\": \"$BUILD_ID\",
\"build_commit_sha\": \"$COMMIT_SHA\",
\"build_url\": \"$BUILD_URL\",
\"description\": \"$DESCRIPTION\",
\"initiator\": \"$INITIATOR\"
}
}]
}")
# 6. Check DevGrid response (optional)
HTTP_CODE=$(echo "$RESPONSE" | tail -n1)
BODY=$(echo "$RESPONSE" | sed '$d')
if [ "$HTTP_CODE" -eq 201 ]; then
echo "✓ Successfully sent deployment event to DevGrid"
else
echo "⚠ Warning: Failed to send event to DevGrid (HTTP $HTTP_CODE)"
echo "$BODY"
# Continue anyway - don't fail deployment if DevGrid notification fails
fi
# 7. Exit with original deployment status
exit $DEPLOY_STATUS
