//! `GET /account`: where you are logged in (one row per session, labelled by device), ending
//! one of them or every other one, and what a new login adds to that list: its device label,
//! its listing on the cookie backend with `cookie_revocation`, and the per-user cap.

use std::convert::Infallible;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use askama::Template;
use serde::Deserialize;

use super::{Chrome, Site, errors::AppError, guard::LoggedIn, http::see_other, human_time};
use crate::web::Tab;
use crate::{
    config::Settings,
    domain::{device, secs},
    session::{
        SessionSummary, Store,
        state::{ChangeError, Flash, Meta, TypedSession},
    },
};

/// One row of the sessions table.
pub struct SessionRow {
    /// The device label read at login.
    pub device: String,
    /// When it logged in.
    pub created: String,
    /// Last recorded activity.
    pub last_seen: String,
    /// Whether it is the session making this request.
    pub current: bool,
    /// What the row's "Log out" form posts: the session's random id, never its key.
    pub handle: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    chrome: Chrome<'a>,
    username: String,
    sessions: Option<Vec<SessionRow>>,
    /// The cookie backend with `cookie_revocation`: it cannot list, but it can end the others.
    can_end_others: bool,
    /// Said once after a login ended older sessions (`max_sessions_per_user`).
    capped: Option<String>,
    /// `max_sessions_per_user`, for the line under the table.
    max_sessions: usize,
}

/// The label a session without one (logged in before labels existed) is shown with.
fn shown_device(summary: &SessionSummary) -> String {
    if summary.device.is_empty() {
        device::UNKNOWN.to_owned()
    } else {
        summary.device.clone()
    }
}

/// `GET /account`.
pub async fn page(
    site: web::Data<Site>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    me: LoggedIn,
) -> Result<HttpResponse, AppError> {
    let chrome = Chrome::private(&site, &me.session, Tab::Account)
        .take_flash(&me.session)
        .await?;
    render(chrome, &store, &settings, &me).await
}

/// The account page with `chrome`'s message: what `GET /account` shows, and what a refused
/// "Log out" answers with (its status set by the caller), so the person sees the list as it is.
async fn render(
    chrome: Chrome<'_>,
    store: &Store,
    settings: &Settings,
    me: &LoggedIn,
) -> Result<HttpResponse, AppError> {
    let current_sid = me.session.meta().map(|m| m.sid);
    let sessions = store.sessions_of(me.user.id).await?.map(|mut list| {
        list.sort_by_key(|s| std::cmp::Reverse(s.last_seen_at));
        list.into_iter()
            .map(|s| SessionRow {
                device: shown_device(&s),
                created: human_time(s.created_at),
                last_seen: human_time(s.last_seen_at),
                current: current_sid.as_deref() == Some(s.sid.as_str()),
                handle: s.sid,
            })
            .collect()
    });
    let capped = me.session.take_capped_note().await?;
    super::private_page(&AccountPage {
        chrome,
        username: me.user.name.clone(),
        sessions,
        can_end_others: store.revocation().is_some(),
        capped,
        max_sessions: settings.max_sessions_per_user,
    })
}

/// The form of a row's "Log out" button.
#[derive(Deserialize)]
pub struct RevokeForm {
    /// The handle shown on /account (a missing one reads as empty, and is refused as such).
    #[serde(default)]
    session: String,
}

/// Whether `handle` has the shape of a session id (24 letters and digits): anything else is
/// refused as malformed before any store is asked.
fn well_formed(handle: &str) -> bool {
    handle.len() == 24 && handle.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `POST /account/sessions/revoke`: ends exactly the session named by `session`, one of this
/// user's others, and answers 303 to /account with a confirmation. A malformed handle (400),
/// this very session (422) or a handle that names no session of this user (404: unknown,
/// ended already, or another user's, which reads the same) change nothing and answer with
/// the account page and a message saying so.
pub async fn revoke(
    site: web::Data<Site>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    me: LoggedIn,
    form: web::Form<RevokeForm>,
) -> Result<HttpResponse, AppError> {
    let handle = form.into_inner().session;
    let refuse = async |status: StatusCode, text: &str| -> Result<HttpResponse, AppError> {
        let mut chrome = Chrome::private(&site, &me.session, Tab::Account);
        chrome.flash = Some(Flash::error(text));
        let mut res = render(chrome, &store, &settings, &me).await?;
        *res.status_mut() = status;
        Ok(res)
    };
    if !well_formed(&handle) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "That is not a session shown on this page. Nothing was changed.",
        )
        .await;
    }
    if me.session.meta().is_some_and(|m| m.sid == handle) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "That is the session of this browser: use \"Log out\" at the top to end it. \
             Nothing was changed.",
        )
        .await;
    }
    let Some(list) = store.sessions_of(me.user.id).await? else {
        return refuse(
            StatusCode::NOT_FOUND,
            "The cookie backend keeps no sessions on the server, so there is nothing it could \
             end. Nothing was changed.",
        )
        .await;
    };
    let target = list.iter().find(|s| s.sid == handle);
    let ended = match target {
        Some(_) => store.revoke(me.user.id, &handle).await?,
        None => false,
    };
    let Some(target) = target.filter(|_| ended) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "None of your sessions has that handle: it may have ended already. Nothing was \
             changed.",
        )
        .await;
    };
    me.session
        .set_flash(Flash::info(format!(
            "Logged out {} (last active {}). That browser has to log in again.",
            shown_device(target),
            human_time(target.last_seen_at)
        )))
        .await?;
    Ok(see_other("/account"))
}

/// What a new login adds beyond the session itself; the login and register handlers call it
/// right after `TypedSession::log_in`. `replaced` is the login this browser held before, if
/// any: it ends with this one, so it neither counts against the cap nor stays listed.
///
/// It labels the session with the device its User-Agent names (no IP address is kept: the
/// README says why), lists it in the app database on the cookie backend with
/// `cookie_revocation`, and ends the user's least recently active sessions beyond
/// `max_sessions_per_user`, leaving a note that /account shows once.
pub async fn after_login(
    req: &HttpRequest,
    session: &TypedSession,
    user_id: i64,
    replaced: Option<Meta>,
) -> Result<(), AppError> {
    let (Some(store), Some(settings)) = (
        req.app_data::<web::Data<Store>>(),
        req.app_data::<web::Data<Settings>>(),
    ) else {
        return Ok(());
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let label = device::label(user_agent);
    match session
        .change(|s| {
            s.set_device(&label);
            Ok::<_, Infallible>(())
        })
        .await
    {
        // A cookie already at its size limit (a full guest cart came along) goes unlabelled.
        Ok(()) | Err(ChangeError::TooLarge { .. }) => {}
        Err(other) => return Err(other.into()),
    }
    let Some(meta) = session.meta() else {
        return Ok(());
    };
    let replaced = replaced.filter(|old| old.sid != meta.sid);
    if let Some(revocation) = store.revocation() {
        let absolute = secs(settings.absolute_timeout);
        if let Some(old) = &replaced {
            // The browser's previous cookie is superseded; a copy of it must not live on
            // unlisted.
            revocation
                .revoke(&old.sid, old.issued_at.saturating_add(absolute))
                .await?;
        }
        revocation
            .record_login(
                &meta.sid,
                user_id,
                &label,
                meta.issued_at.saturating_add(absolute),
            )
            .await?;
    }
    let mut keep = vec![meta.sid.as_str()];
    keep.extend(replaced.as_ref().map(|old| old.sid.as_str()));
    let ended = store
        .end_beyond_cap(user_id, &keep, settings.max_sessions_per_user)
        .await?;
    if let Some(note) = capped_note(&ended, settings.max_sessions_per_user) {
        match session
            .change(|s| {
                s.set_capped_note(note.clone());
                Ok::<_, Infallible>(())
            })
            .await
        {
            // The sessions ended either way; only the note did not fit the cookie.
            Ok(()) | Err(ChangeError::TooLarge { .. }) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

/// What /account says once after a login ended `ended` to stay within `max` sessions.
fn capped_note(ended: &[SessionSummary], max: usize) -> Option<String> {
    let first = ended.first()?;
    let limit = format!("You can be logged in on at most {max} devices at once, so this login");
    Some(match ended.len() {
        1 => format!(
            "{limit} ended your least recently active session: {} (last active {}).",
            shown_device(first),
            human_time(first.last_seen_at)
        ),
        n => format!("{limit} ended your {n} least recently active sessions."),
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
        if let Some(meta) = me.session.meta() {
            // The epoch refuses the others; their rows on /account go with them.
            revocation.forget_others(me.user.id, &meta.sid).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(device: &str, last_seen_at: i64) -> SessionSummary {
        SessionSummary {
            sid: "a".repeat(24),
            created_at: 1,
            last_seen_at,
            device: device.to_owned(),
        }
    }

    #[test]
    fn only_the_shape_of_a_session_id_is_a_handle() {
        assert!(well_formed("abcdefghijklmnopqrstuvwx"));
        assert!(well_formed("ABCDEFGHIJKLMNOP01234567"));
        for bad in [
            "",
            "abcdefghijklmnopqrstuvw",
            "abcdefghijklmnopqrstuvwxy",
            "abcdefghijklmnopqrstuvw-",
            "abcdefghijklmnopqrstuvw\0",
            "abcdefghijklmnopqrstuvwé",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_cap_note_names_the_one_session_it_ended_or_counts_several() {
        assert_eq!(capped_note(&[], 5), None, "nothing ended, nothing said");
        let one = capped_note(&[summary("Chrome on Android", 0)], 5).expect("a note");
        assert!(
            one.starts_with("You can be logged in on at most 5 devices"),
            "{one}"
        );
        assert!(
            one.contains("session: Chrome on Android (last active 1970-01-01"),
            "{one}"
        );
        let unlabelled = capped_note(&[summary("", 0)], 5).expect("a note");
        assert!(unlabelled.contains(device::UNKNOWN), "{unlabelled}");
        let two = capped_note(&[summary("a", 0), summary("b", 1)], 2).expect("a note");
        assert!(
            two.ends_with("ended your 2 least recently active sessions."),
            "{two}"
        );
    }
}
