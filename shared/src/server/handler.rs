//! Plain async functions as handlers, axum-style: any number of extractors ([`State`],
//! [`MessageContext`]) followed by the payload, whose type picks the contract.
//!
//! ```ignore
//! async fn get_user(State(db): State<Db>, request: GetUser) -> Result<User, GetUserError>;
//! async fn on_user_created(State(db): State<Db>, ctx: MessageContext, event: UserCreated) -> Result<(), ProjectionError>;
//! ```
//!
//! [`State`]: super::State
//! [`MessageContext`]: super::MessageContext

use std::{future::Future, pin::Pin};

use serde_json::value::RawValue;

use super::extract::{FromMessage, MessageContext};
use crate::{
    contracts::{Event, Request},
    error::{EventFailure, RpcException},
};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A request handler for the contract `R` (inferred from the payload argument).
pub trait RequestHandler<S, T>: Clone + Send + Sync + 'static {
    /// The contract this handler answers.
    type Request: Request;
    fn call(
        &self,
        context: MessageContext,
        state: &S,
        request: Self::Request,
    ) -> BoxFuture<Result<<Self::Request as Request>::Response, RpcException>>;
}

/// An event handler for the contract `E` (inferred from the payload argument).
pub trait EventHandler<S, T>: Clone + Send + Sync + 'static {
    /// The contract this handler consumes.
    type Event: Event;
    fn call(&self, context: MessageContext, state: &S, event: Self::Event) -> BoxFuture<Result<(), EventFailure>>;
}

macro_rules! impl_handlers {
    ($($extractor:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, S, R, Err, $($extractor,)*> RequestHandler<S, ($($extractor,)* R,)> for F
        where
            F: Fn($($extractor,)* R) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<R::Response, Err>> + Send + 'static,
            R: Request,
            Err: Into<RpcException>,
            $($extractor: FromMessage<S>,)*
        {
            type Request = R;
            fn call(&self, context: MessageContext, state: &S, request: R) -> BoxFuture<Result<R::Response, RpcException>> {
                $(let $extractor = $extractor::from_message(&context, state);)*
                let future = (self)($($extractor,)* request);
                Box::pin(async move { future.await.map_err(Into::into) })
            }
        }

        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, S, E, Err, $($extractor,)*> EventHandler<S, ($($extractor,)* E,)> for F
        where
            F: Fn($($extractor,)* E) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<(), Err>> + Send + 'static,
            E: Event,
            Err: Into<EventFailure>,
            $($extractor: FromMessage<S>,)*
        {
            type Event = E;
            fn call(&self, context: MessageContext, state: &S, event: E) -> BoxFuture<Result<(), EventFailure>> {
                $(let $extractor = $extractor::from_message(&context, state);)*
                let future = (self)($($extractor,)* event);
                Box::pin(async move { future.await.map_err(Into::into) })
            }
        }
    };
}

impl_handlers!();
impl_handlers!(T1);
impl_handlers!(T1, T2);
impl_handlers!(T1, T2, T3);

/// A handler behind its contract: reads the raw `data` into the contract type, runs, encodes.
type ErasedRequest<S> =
    Box<dyn Fn(MessageContext, &S, &RawValue) -> BoxFuture<Result<Vec<u8>, RpcException>> + Send + Sync>;
type ErasedEvent<S> = Box<dyn Fn(MessageContext, &S, &RawValue) -> BoxFuture<Result<(), EventFailure>> + Send + Sync>;

/// A handler with its types erased, as the router stores it.
pub(crate) enum Route<S> {
    /// Returns the encoded `{"response": …, "isDisposed": true}` body.
    Request(ErasedRequest<S>),
    Event(ErasedEvent<S>),
}

impl<S: Send + Sync + 'static> Route<S> {
    pub(crate) fn request<T, H: RequestHandler<S, T>>(handler: H) -> Self {
        Self::Request(Box::new(move |context, state, data| {
            let request = match serde_json::from_str::<H::Request>(data.get()) {
                Ok(request) => request,
                Err(error) => {
                    // Answered 400, and marked so that the consume loop parks the request too.
                    let message = format!("invalid payload for {}: {error}", context.pattern);
                    let exception = RpcException::status(400, message).with_source(InvalidPayload(error));
                    return Box::pin(async move { Err(exception) });
                }
            };
            let future = handler.call(context, state, request);
            Box::pin(async move {
                let response = future.await?;
                crate::wire::encode_success(&response).map_err(RpcException::internal)
            })
        }))
    }

    pub(crate) fn event<T, H: EventHandler<S, T>>(handler: H) -> Self {
        Self::Event(Box::new(move |context, state, data| match serde_json::from_str::<H::Event>(data.get()) {
            Ok(event) => handler.call(context, state, event),
            Err(error) => Box::pin(async move { Err(EventFailure::permanent(InvalidPayload(error))) }),
        }))
    }
}

/// A message whose data does not match its contract: parked at once, retrying cannot help
/// (a request is also answered 400).
#[derive(Debug, thiserror::Error)]
#[error("the payload does not match its contract")]
pub struct InvalidPayload(#[source] pub serde_json::Error);
