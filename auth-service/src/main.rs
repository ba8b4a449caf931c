//! `auth-service`: runs the service; `auth-service healthcheck` probes a running one (exit code
//! 0 when `/healthz` answers 200), for container health checks without curl; `--help` lists
//! every setting.

fn main() -> std::process::ExitCode {
    shared::startup::main(&auth_service::SERVICE, |config: auth_service::Config, shutdown| async move {
        auth_service::App::build(config, shutdown).await?.run_until_stopped().await;
        Ok::<(), auth_service::StartupError>(())
    })
}
