//! `notification-service`: run the service, `notification-service --help` for every setting,
//! or `notification-service healthcheck` to probe a running one's `/healthz` (exit code 0 when
//! healthy, 1 otherwise; for container checks).

fn main() -> std::process::ExitCode {
    shared::startup::main(&notification_service::SERVICE, |config: notification_service::Config, shutdown| async move {
        notification_service::App::build(config, shutdown).await?.run_until_stopped().await;
        Ok::<(), notification_service::StartupError>(())
    })
}
