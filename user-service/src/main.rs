//! The `user-service` binary: `user-service` runs the service, `user-service healthcheck`
//! asks a running one for `/healthz` (exit code 0 or 1), `--help` lists every setting.

fn main() -> std::process::ExitCode {
    shared::startup::main(&user_service::SERVICE, |config: user_service::Config, shutdown| async move {
        user_service::App::build(config, shutdown).await?.run_until_stopped().await;
        Ok::<(), user_service::StartupError>(())
    })
}
