"""Every route of the gateway in one readable catalogue (the OpenAPI document is built from it)."""

from __future__ import annotations

from gateway import console
from gateway.resources import (
    accounts,
    actions,
    admin,
    aimg,
    billing,
    collaborations,
    compositions,
    content,
    credits,
    docs,
    files,
    hooks,
    oauth2,
    ops,
    payments,
    posts,
    project_runs,
    projects,
    resumable,
    sessions,
    social,
    stories,
    webhook_endpoints,
    workflows2,
)


def route_table(deps) -> list[tuple[str, object]]:
    service, config = deps.actions, deps.config
    redis, slots = deps.redis, deps.wait_slots  # slots: caps on waits and streams
    call = actions.ActionCall(service, config, redis, slots)
    oauth_server, token_service, social_login = deps.oauth_server, deps.tokens, deps.social_login
    login_guard = sessions.LoginGuard(deps.limiter, config.logins, config.trusted_proxies)
    docs_page = docs.DocsPage(config.public_base_url)
    return [
        # Operations
        ("/health", ops.Health()),
        ("/health/ready", ops.Ready(deps.redis, config, deps.actions.models)),
        ("/metrics", ops.Metrics(deps.redis, config, deps.actions.models)),
        ("/openapi.json", ops.OpenAPI(lambda req: deps.openapi(req))),
        # The interactive API reference over /openapi.json (public; not in the document)
        ("/docs", docs_page),
        ("/docs/", docs_page),
        ("/docs/static/{name}", docs.DocsAssets(docs.swagger_ui_dir())),
        # Actions (CONTRACT 6)
        ("/zapier/v1", actions.MissingActionName()),
        ("/zapier/v1/", actions.MissingActionName()),
        ("/zapier/v1/actions", actions.ActionCatalogue(service)),
        ("/zapier/v1/me", actions.Me(deps.clock)),
        ("/zapier/v1/{action}", call),
        ("/zapier/v1/{action}/estimate", actions.ActionEstimate(service)),
        # Asynchronous results (CONTRACT 6)
        ("/zapier/v1/compositions", compositions.CompositionList(config, redis)),
        ("/zapier/v1/compositions/{uid}", compositions.CompositionItem(config, redis, slots)),
        ("/zapier/v1/compositions/{uid}/events",
         compositions.CompositionEvents(config, redis, slots)),
        ("/zapier/v1/compositions/{uid}/cancel", compositions.CompositionCancel(config, redis,
                                                                          deps.clock)),
        ("/outputs/{uid}/{name}", compositions.OutputFile(deps.storage)),
        # Lists, triggers and webhooks (CONTRACT 7)
        ("/list-posts", posts.ListPosts(config, service)),
        ("/zapier/v1/hooks", hooks.Hooks(config, deps.actions.policy, deps.clock)),
        ("/zapier/v1/hooks/{hook_id}", hooks.HookItem()),
        ("/zapier/v1/hooks/secret/rotate", hooks.HookSecretRotate()),
        ("/zapier/v1/credits/low-threshold", hooks.LowCreditThreshold()),
        # Webhook endpoints like Stripe's (issue 15; docs/API.md)
        ("/zapier/v1/webhook-endpoints", webhook_endpoints.WebhookEndpoints(deps)),
        ("/zapier/v1/webhook-endpoints/{endpoint_id}",
         webhook_endpoints.WebhookEndpointItem(deps)),
        ("/zapier/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
         webhook_endpoints.WebhookEndpointRotate(deps)),
        ("/zapier/v1/webhook-endpoints/{endpoint_id}/test",
         webhook_endpoints.WebhookEndpointTest(deps)),
        ("/zapier/v1/webhook-endpoints/{endpoint_id}/deliveries",
         webhook_endpoints.WebhookEndpointDeliveries(deps)),
        ("/zapier/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}",
         webhook_endpoints.WebhookDeliveryItem()),
        ("/zapier/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
         webhook_endpoints.WebhookDeliveryRedeliver(deps)),
        # Credits (CONTRACT 4)
        ("/zapier/v1/credits", credits.Credits()),
        ("/zapier/v1/credits/transactions", credits.Transactions(config)),
        ("/zapier/v1/receipts/{txn_receipt}", credits.Receipt()),
        # Accounts and keys (CONTRACT 10; seeds 000 and 002)
        ("/api/account/create", accounts.Signup(config)),
        ("/api/key/generate", accounts.KeyGenerate(deps.config, deps.clock)),
        ("/api/key/list", accounts.KeyList(config)),
        ("/api/key/{key_id}/revoke", accounts.KeyRevoke(deps.generations)),
        # Admin (X-Administration-Key)
        ("/admin/accounts", admin.AdminAccounts()),
        ("/admin/accounts/{account_id}", admin.AdminAccount(deps.generations)),
        ("/admin/accounts/{account_id}/credits", admin.AdminCredits(deps)),
        ("/admin/accounts/{account_id}/keys", admin.AdminKeys()),
        ("/admin/keys/{key_id}", admin.AdminKey(deps.generations)),
        ("/admin/plans/{name}", admin.AdminPlan(deps.generations)),
        ("/admin/plans/{name}/storage", admin.AdminPlanStorage()),
        ("/admin/prices/{action}", admin.AdminPrice(service, deps.generations)),
        ("/admin/receipts/{txn_receipt}/refund", admin.AdminRefund(deps)),
        # Identity (CONTRACT 2): the OAuth2 provider (docs/OAUTH.md)
        ("/oauth/authorize", oauth2.Authorize(deps, oauth_server)),
        ("/oauth/token", oauth2.Token(deps, oauth_server)),
        ("/oauth/revoke", oauth2.Revoke(deps, oauth_server)),
        ("/admin/oauth/clients", oauth2.AdminOAuthClients()),
        # Password bearer tokens (seed 001; docs/SESSIONS.md)
        ("/auth/token", sessions.AuthToken(token_service, login_guard)),
        ("/auth/refresh", sessions.AuthRefresh(token_service, login_guard)),
        # Story videos (seed 001; docs/STORY.md)
        ("/video", stories.Video(deps)),
        ("/video/tasks/{task_id}", stories.VideoTask()),
        ("/images/tasks/{task_id}", stories.ImageTask()),
        ("/images/{image_id}", stories.ImageRegenerate(deps)),
        # Account data, settings, usage and self user (seeds 000, 002, 003)
        ("/api/account/data", sessions.AccountData(deps, login_guard)),
        ("/api/account/settings/set", sessions.SettingsSet(deps.clock)),
        ("/api/account/settings/get", sessions.SettingsGet()),
        ("/api/usage", sessions.Usage(deps.clock)),
        ("/api/user/self", sessions.SelfUser(deps.clock)),
        # Social login (docs/SOCIAL.md); the static path first (Falcon prefers it anyway)
        ("/auth/social/exchange", social.SocialExchange(social_login, config)),
        ("/auth/{provider}", social.SocialStart(social_login, config, deps.limiter)),
        ("/auth/{provider}/callback", social.SocialCallback(social_login, config)),
        # AIMG compatibility routes (seed 003; CONTRACT 9)
        ("/generateImage", aimg.GenerateImage(deps)),
        ("/generateVideo", aimg.GenerateVideo(deps)),
        ("/getItemStatus", aimg.ItemStatus(deps)),
        ("/getModels", aimg.Models(deps)),
        ("/getQueuesLength", aimg.QueuesLength(deps)),
        ("/getSamplePrompts", aimg.SamplePrompts()),
        # Projects and project runs (seed 000; docs/PROJECTS.md); static paths before
        # /api/project/runs/{run_id} (Falcon prefers them anyway)
        ("/api/project/create", projects.ProjectCreate(deps)),
        ("/api/project/update", projects.ProjectUpdate(deps)),
        ("/api/project/get", projects.ProjectGet(deps)),
        ("/api/project/delete", projects.ProjectDelete(deps)),
        ("/api/project/list/mine", projects.ProjectListMine(deps)),
        ("/api/project/list/trending", projects.ProjectListTrending(deps)),
        ("/api/project/interact", projects.ProjectInteract(deps)),
        ("/api/project/nodes", projects.ProjectNodes(deps)),
        ("/api/project/runs/estimate", project_runs.RunEstimate(deps)),
        ("/api/project/runs/run", project_runs.RunStart(deps)),
        ("/api/project/runs/list", project_runs.RunList(deps)),
        ("/api/project/runs/{run_id}", project_runs.RunItem(deps)),
        ("/api/project/runs/{run_id}/events", project_runs.RunEvents(deps)),
        ("/api/project/runs/{run_id}/cancel", project_runs.RunCancel(deps)),
        ("/api/project/runs/{run_id}/retry", project_runs.RunRetry(deps)),
        # Workflows (seed 003 AIMG API2) over projects (docs/PROJECTS.md)
        ("/2/getAggregatedWorkflowTemplates", workflows2.AggregatedWorkflowTemplates()),
        ("/2/enqueueWorkflow", workflows2.EnqueueWorkflow(deps)),
        ("/2/getWorkflowStatus", workflows2.WorkflowStatus(deps)),
        ("/2/getFileGroupItems", workflows2.FileGroupItems()),
        ("/2/getUserSession", sessions.UserSession(config)),
        # The content library (seed 002; docs/CONTENT.md); static paths before
        # /content/{content_id} (Falcon prefers them anyway)
        ("/upload", content.Upload(deps)),
        ("/content/list", content.ContentList(deps)),
        ("/content/{content_id}", content.ContentResource(deps)),
        ("/content/{content_id}/metadata", content.ContentMetadata(deps)),
        ("/content/{content_id}/versions", content.ContentVersions(deps)),
        ("/content/{content_id}/download", content.ContentDownload(deps)),
        ("/content/{content_id}/share", content.ContentShare(deps)),
        ("/links/{content_id}", content.ContentLink(deps)),
        ("/links/{content_id}/{name}", content.ContentLink(deps)),
        ("/storage/usage", content.StorageUsage(deps)),
        # Collaborations and analytics (seed 002; docs/CONTENT.md)
        ("/collaboration/create", collaborations.CollaborationCreate(deps)),
        ("/collaboration/list", collaborations.CollaborationList(deps)),
        ("/collaboration/{collaboration_id}", collaborations.CollaborationItem(deps)),
        ("/analytics", collaborations.ContentAnalytics(deps)),
        # Resumable uploads (tus 1.0; docs/CONTENT.md)
        ("/uploads", resumable.TusUploads(deps)),
        ("/uploads/{upload_id}", resumable.TusUpload(deps)),
        # Files (seeds 000 and 003) over the content library
        ("/api/file/get", files.FileGet(deps)),
        ("/api/file/list", files.FileList(deps)),
        ("/uploadFile", files.UploadFile(deps)),
        ("/getFile", files.GetFile(deps)),
        ("/getFileMetadata", files.GetFileMetadata(deps)),
        ("/removeFile", files.RemoveFile(deps)),
        # Payments (seed 000; docs/PAYMENTS.md)
        ("/api/paypal/create", payments.PayPalCreate(deps.payments)),
        ("/api/paypal/execute", payments.PayPalExecute(deps.payments)),
        ("/webhooks/paypal", payments.PayPalWebhook(deps.payments, config.max_body_bytes)),
        # Billing plans and gift cards (seed 003; docs/BILLING.md)
        ("/getBillingPlans", billing.GetBillingPlans()),
        ("/createBillingPlan", billing.CreateBillingPlan(deps.clock)),
        ("/setAdminProvidedPremiumTier",
         billing.SetAdminProvidedPremiumTier(deps.clock, deps.generations)),
        ("/cancelMembership", billing.CancelMembership(deps.clock)),
        ("/downloadGiftCards", billing.DownloadGiftCards(deps.clock)),
        ("/redeemGiftCard", billing.RedeemGiftCard(deps.clock, deps.limiter, config,
                                                      deps.generations)),
        # The web console (HTML; docs/CONSOLE.md): not in the OpenAPI document
        *console.routes(deps, login_guard),
    ]
