//! `GET /account`: your active sessions, where the backend can list them; revoke the others.

use std::convert::Infallible;

use actix_web::{HttpResponse, web};
use askama::Template;

use super::{Chrome, Site, errors::AppError, guard::LoggedIn, http::see_other, human_time};
use crate::session::{
    Store,
    state::{ChangeError, Flash},
};
use crate::web::Tab;

/// One row of the sessions table.
pub struct SessionRow {
    /// When it logged in.
    pub created: String,
    /// Last recorded activity.
    pub last_seen: String,
    /// Whether it is the session making this request.
    pub current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    chrome: Chrome<'a>,
    username: String,
    sessions: Option<Vec<SessionRow>>,
    /// The cookie backend with `cookie_revocation`: it cannot list, but it can end the others.
    can_end_others: bool,
}

/// `GET /account`.
pub async fn page(
    site: web::Data<Site>,
    store: web::Data<Store>,
    me: LoggedIn,
) -> Result<HttpResponse, AppError> {
    let current_sid = me.session.meta().map(|m| m.sid);
    let sessions = store.sessions_of(me.user.id).await?.map(|mut list| {
        list.sort_by_key(|s| std::cmp::Reverse(s.last_seen_at));
        list.into_iter()
            .map(|s| SessionRow {
                created: human_time(s.created_at),
                last_seen: human_time(s.last_seen_at),
                current: current_sid.as_deref() == Some(s.sid.as_str()),
            })
            .collect()
    });
    super::private_page(&AccountPage {
        chrome: Chrome::private(&site, &me.session, Tab::Account)
            .take_flash(&me.session)
            .await?,
        username: me.user.name.clone(),
        sessions,
        can_end_others: store.revocation().is_some(),
    })
}

/// Puts this session into `epoch`, with the confirmation when `confirm` and the cookie can
/// hold it (the epoch matters, the message does not).
async fn follow_epoch(me: &LoggedIn, epoch: i64, confirm: bool) -> Result<(), AppError> {
    let with_message = me
        .session
        .change(|s| {
            s.set_epoch(epoch);
            if confirm {
                s.set_flash(Flash::info(
                    "Every other session of yours has ended: their cookies are refused from now on.",
                ));
            }
            Ok::<_, Infallible>(())
        })
        .await;
    match with_message {
        Err(ChangeError::TooLarge { .. }) if confirm => Ok(me
            .session
            .change(|s| {
                s.set_epoch(epoch);
                Ok::<_, Infallible>(())
            })
            .await?),
        other => Ok(other?),
    }
}

/// `POST /account/sessions/revoke-others`: ends every other session of this user.
pub async fn revoke_others(
    store: web::Data<Store>,
    me: LoggedIn,
) -> Result<HttpResponse, AppError> {
    if let Some(revocation) = store.revocation() {
        // The cookie backend cannot find the other cookies; it moves the user's epoch past
        // them instead, and this session into the new epoch. This session moves first: a
        // cookie too full to take the new epoch is refused (422) before anything changes.
        let next = revocation.epoch_of(me.user.id).await?.saturating_add(1);
        follow_epoch(&me, next, true).await?;
        let epoch = revocation.advance_epoch(me.user.id).await?;
        if epoch != next {
            // Another "log out everywhere else" of this user moved it at the same moment.
            follow_epoch(&me, epoch, false).await?;
        }
        return Ok(see_other("/account"));
    }
    if !store.can_list() {
        me.session.set_flash(Flash::error("The cookie backend keeps no sessions on the server, so there is nothing it could revoke.",
        ))
        .await?;
        return Ok(see_other("/account"));
    }
    let Some(meta) = me.session.meta() else {
        return Ok(see_other("/account"));
    };
    let revoked = store.revoke_others(me.user.id, &meta.sid).await?;
    let text = match revoked {
        0 => "There were no other sessions to end.".to_owned(),
        1 => "Ended 1 other session.".to_owned(),
        n => format!("Ended {n} other sessions."),
    };
    me.session.set_flash(Flash::info(text)).await?;
    Ok(see_other("/account"))
}
