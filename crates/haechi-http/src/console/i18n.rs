//! The console's two languages. Korean is the default; English when the user chose it (cookie
//! `haechi_lang`) or the browser prefers it (`Accept-Language`). Every string of every page is
//! in [`TEXT`], once per language; a unit test checks that every key a template uses is there.

use axum::http::request::Parts;
use axum::http::HeaderMap;

/// The language of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ko,
    En,
}

/// The cookie that keeps a user's choice of language.
pub const LANG_COOKIE: &str = "haechi_lang";

/// (key, Korean, English).
const TEXT: &[(&str, &str, &str)] = &[
    ("app", "Haechi 운영 콘솔", "Haechi console"),
    ("skip", "본문으로 건너뛰기", "Skip to content"),
    ("user_id", "사용자 ID", "User ID"),
    ("password", "비밀번호", "Password"),
    ("login", "로그인", "Log in"),
    ("logout", "로그아웃", "Log out"),
    ("login_title", "콘솔 로그인", "Console login"),
    ("login_failed", "사용자 ID 또는 비밀번호가 올바르지 않거나, 이 계정으로 지금 로그인할 수 없습니다.", "Wrong user ID or password, or this account may not log in now."),
    ("login_busy", "로그인 시도가 너무 많습니다. 잠시 후 다시 시도하세요.", "Too many login attempts; try again shortly."),
    ("login_expired", "로그인 양식이 만료되었습니다. 다시 시도하세요.", "The login form expired; please try again."),
    ("logged_out", "로그아웃되었습니다.", "You have logged out."),
    ("session_expired", "세션이 만료되었습니다. 다시 로그인하세요.", "Your session expired; please log in again."),
    ("expiry_warning", "활동이 없어 곧 세션이 만료됩니다.", "Your session will expire soon for inactivity."),
    ("stay", "세션 연장", "Stay logged in"),
    ("language", "언어", "Language"),
    ("lang_ko", "한국어", "한국어 (Korean)"),
    ("lang_en", "English (영어)", "English"),
    ("change", "변경", "Change"),
    ("nav", "주 메뉴", "Main menu"),
    ("nav_dashboard", "대시보드", "Dashboard"),
    ("nav_workflows", "워크플로", "Workflows"),
    ("nav_executions", "실행 이력", "Runs"),
    ("nav_tasks", "태스크", "Tasks"),
    ("nav_approvals", "승인 대기", "Approvals"),
    ("nav_nodes", "노드", "Nodes"),
    ("signed_in_as", "로그인 사용자", "Signed in as"),
    ("sealed_banner", "자격 증명 금고가 봉인되어 있습니다. 금고 값이 필요한 단계와 DB 게이트웨이 계정은 봉인 해제 전까지 실패합니다.", "The credential vault is sealed. Steps that need vault values and DB gateway accounts fail until it is unsealed."),
    ("running_now", "실행 중인 워크플로", "Runs in progress"),
    ("no_running", "실행 중인 워크플로가 없습니다.", "No run is in progress."),
    ("pending_approvals", "결정 대기 중인 승인", "Approvals waiting for you"),
    ("no_approvals", "결정할 승인이 없습니다.", "Nothing waits for your decision."),
    ("task_approvals", "승인 요청된 태스크", "Tasks waiting for approval"),
    ("missing_nodes", "하트비트가 끊긴 노드", "Nodes with missing heartbeats"),
    ("no_missing_nodes", "모든 노드가 하트비트를 보내고 있습니다.", "Every node is sending heartbeats."),
    ("execution", "실행", "Run"),
    ("workflow", "워크플로", "Workflow"),
    ("status", "상태", "Status"),
    ("started_by", "시작한 사람", "Started by"),
    ("started_at", "시작 시각", "Started"),
    ("ended_at", "종료 시각", "Ended"),
    ("elapsed", "경과 시간", "Elapsed"),
    ("progress", "진행률", "Progress"),
    ("version", "버전", "Version"),
    ("params", "파라미터", "Parameters"),
    ("no_params", "파라미터 없음", "No parameters"),
    ("step", "단계", "Step"),
    ("steps", "단계 목록", "Steps"),
    ("type", "종류", "Type"),
    ("attempts", "시도", "Attempts"),
    ("error", "오류", "Error"),
    ("decision", "결정", "Decision"),
    ("decided_by", "결정한 사람", "Decided by"),
    ("comment", "의견", "Comment"),
    ("graph", "흐름도", "Flowchart"),
    ("graph_desc", "단계와 의존 관계를 나타낸 흐름도. 같은 내용이 아래 단계 목록에 있습니다.", "Flowchart of the steps and their dependencies; the step list below has the same content."),
    ("live", "실시간 갱신 중", "Updating live"),
    ("live_off", "실시간 갱신이 끊겼습니다. 새로 고침하세요.", "Live updates stopped; reload the page."),
    ("controls", "실행 제어", "Run controls"),
    ("Run", "실행", "Run"),
    ("Pause", "일시정지", "Pause"),
    ("Resume", "재개", "Resume"),
    ("Stop", "중지", "Stop"),
    ("Approve", "승인", "Approve"),
    ("Reject", "반려", "Reject"),
    ("Re-run", "재실행", "Re-run"),
    ("Cancel", "취소", "Cancel"),
    ("Request approval", "승인 요청", "Request approval"),
    ("filter", "필터", "Filter"),
    ("apply", "적용", "Apply"),
    ("all", "전체", "All"),
    ("from", "시작일", "From"),
    ("to", "종료일", "To"),
    ("prev_page", "이전 페이지", "Previous page"),
    ("next_page", "다음 페이지", "Next page"),
    ("page_of", "페이지", "Page"),
    ("total", "전체 건수", "Total"),
    ("none", "없음", "None"),
    ("log", "로그", "Log"),
    ("step_log", "단계 로그", "Step log"),
    ("nodes_of_step", "이 단계의 노드", "Nodes of this step"),
    ("node", "노드", "Node"),
    ("exit_code", "종료 코드", "Exit code"),
    ("exec_no", "실행 번호", "execNo"),
    ("reason", "사유", "Reason"),
    ("output", "출력", "Output"),
    ("stdout", "표준 출력", "stdout"),
    ("stderr", "표준 오류", "stderr"),
    ("follow", "따라가기", "Follow"),
    ("search", "검색", "Search"),
    ("load_earlier", "이전 출력 더 보기", "Load earlier output"),
    ("shown_bytes", "표시 중인 바이트", "Bytes shown"),
    ("of_bytes", "전체", "of"),
    ("no_output", "출력이 없습니다.", "No output."),
    ("matches", "일치하는 줄", "Matching lines"),
    ("select_node", "노드를 선택하면 출력을 볼 수 있습니다.", "Choose a node to see its output."),
    ("task_instance", "태스크 인스턴스", "Task instance"),
    ("task", "태스크", "Task"),
    ("arguments", "인자", "Arguments"),
    ("runner", "실행한 사람", "Run by"),
    ("node_grid", "노드별 실행 결과", "Results by node"),
    ("no_nodes", "노드가 없습니다.", "No nodes."),
    ("workflows", "워크플로 목록", "Workflows"),
    ("group", "그룹", "Group"),
    ("name", "이름", "Name"),
    ("description", "설명", "Description"),
    ("updated_at", "수정 시각", "Updated"),
    ("created_by", "만든 사람", "Created by"),
    ("definition", "정의", "Definition"),
    ("run_form", "실행 파라미터", "Run with parameters"),
    ("required", "필수", "required"),
    ("default_is", "기본값", "default"),
    ("versions", "버전 이력", "Versions"),
    ("runs_of_wf", "이 워크플로의 실행", "Runs of this workflow"),
    ("nodes", "노드 목록", "Nodes"),
    ("hostname", "호스트 이름", "Host name"),
    ("ip", "IP 주소", "IP address"),
    ("os", "운영체제", "OS"),
    ("agent_ver", "에이전트 버전", "Agent version"),
    ("heartbeat", "마지막 하트비트", "Last heartbeat"),
    ("heartbeat_age", "하트비트 경과", "Heartbeat age"),
    ("connected", "연결됨", "Connected"),
    ("disconnected", "연결 끊김", "Not connected"),
    ("missing_since", "하트비트 끊김 시작", "Missing since"),
    ("enabled", "사용", "Enabled"),
    ("disabled", "사용 안 함", "Disabled"),
    ("Enable", "사용", "Enable"),
    ("Disable", "사용 중지", "Disable"),
    ("enrol", "노드 등록", "Enrol a node"),
    ("enrol_help", "등록 토큰을 만들고, 새 서버에서 아래 명령을 실행하세요. 토큰은 이 화면에서 한 번만 보입니다.", "Create an enrolment token, then run the command below on the new machine. The token is shown only on this page, once."),
    ("create_token", "등록 토큰 만들기", "Create enrolment token"),
    ("node_id_opt", "노드 ID (선택)", "Node ID (optional)"),
    ("command", "실행할 명령", "Command to run"),
    ("tasks", "태스크 목록", "Tasks"),
    ("owner", "소유자", "Owner"),
    ("approval_status", "승인 상태", "Approval status"),
    ("revision", "리비전", "Revision"),
    ("script", "스크립트", "Script"),
    ("approvals", "승인 대기열", "Approval queue"),
    ("workflow_approvals", "워크플로 승인 단계", "Workflow approval steps"),
    ("role", "역할", "Role"),
    ("requested_by", "요청한 사람", "Requested by"),
    ("requested_at", "요청 시각", "Requested"),
    ("actions", "작업", "Actions"),
    ("open", "열기", "Open"),
    ("error_title", "요청을 처리할 수 없습니다", "The request could not be done"),
    ("forbidden", "이 화면이나 작업에 대한 권한이 없습니다. 아무것도 바뀌지 않았습니다.", "You do not have the right to this page or action. Nothing was changed."),
    ("not_found", "찾을 수 없습니다.", "Not found."),
    ("csrf_failed", "요청의 보안 토큰이 없거나 올바르지 않습니다. 아무것도 바뀌지 않았습니다. 화면을 새로 고친 뒤 다시 시도하세요.", "The request's security token is missing or wrong. Nothing was changed. Reload the page and try again."),
    ("back", "대시보드로", "To the dashboard"),
    ("done_ok", "처리되었습니다.", "Done."),
    ("secs", "초", "s"),
    ("time_zone", "시간대", "Time zone"),
    ("run_on_nodes", "노드에서 실행", "Run on nodes"),
    ("nodes_help", "노드 ID를 공백이나 쉼표로 구분해 입력합니다.", "Node IDs, separated by spaces or commas."),
    ("arguments_help", "한 줄에 인자 하나 (줄 전체가 하나의 인자).", "One argument per line (each line is one whole argument)."),
    ("revisions", "리비전 이력", "Revisions"),
    ("diff", "비교", "Compare"),
    // console-vault
    ("nav_vault", "자격 증명 금고", "Credential vault"),
    ("v_save", "저장", "Save"),
    ("v_delete", "삭제", "Delete"),
    ("v_reveal", "값 보기", "Reveal"),
    ("v_copy", "복사", "Copy"),
    ("v_unseal", "봉인 해제", "Unseal"),
    ("v_hide", "숨기기", "Hide"),
    ("v_state", "금고 상태", "Vault state"),
    ("v_seal", "봉인 상태", "Seal state"),
    ("v_sealed", "봉인됨 (SEALED)", "SEALED"),
    ("v_unsealed", "봉인 해제됨 (UNSEALED)", "UNSEALED"),
    ("v_sealed_help", "봉인된 동안에는 값을 읽거나 쓸 수 없습니다. 마스터 키를 적용하면 봉인이 해제됩니다.", "While the vault is sealed no value can be read or written. Applying the master key unseals it."),
    ("v_mode", "연결 모드", "Mode"),
    ("v_key_source", "마스터 키 출처", "Master key source"),
    ("v_unseal_title", "마스터 키로 봉인 해제", "Unseal with the master key"),
    ("v_master_key", "마스터 키", "Master key"),
    ("v_master_key_help", "32바이트를 base64로 적은 키입니다. 입력한 키는 화면, 로그, 감사 기록 어디에도 남지 않습니다.", "32 bytes in base64. The key you type is not kept on the page, in the log or in the audit."),
    ("v_mode_change", "연결 모드 변경", "Change the mode"),
    ("v_mode_help", "Express: 서버가 시작할 때 보관한 키로 스스로 봉인을 해제합니다. Manual: 시작할 때마다 봉인되며 보관한 키 파일을 지웁니다. 현재 마스터 키가 필요합니다.", "Express: the server unseals itself at start with a key it keeps. Manual: sealed after every start, and the kept key file is deleted. The current master key is needed."),
    ("v_mode_apply", "모드 변경", "Change mode"),
    ("v_lockers", "보관함", "Lockers"),
    ("v_locker", "보관함", "Locker"),
    ("v_no_lockers", "볼 수 있는 보관함이 없습니다.", "No locker you can see."),
    ("v_your_perms", "내 권한", "Your permissions"),
    ("v_members", "구성원", "Members"),
    ("v_consumers", "소비자 역할", "Consumer roles"),
    ("v_consumers_help", "이 역할을 가진 사용자는 보관함의 자격 증명과 그 값을 읽을 수 있습니다.", "Users holding these roles may read the locker's credentials and their values."),
    ("v_credentials", "자격 증명", "Credentials"),
    ("v_credential", "자격 증명", "Credential"),
    ("v_no_credentials", "볼 수 있는 자격 증명이 없습니다.", "No credential you can see."),
    ("v_attributes", "속성", "Attributes"),
    ("v_attribute", "속성", "Attribute"),
    ("v_attributes_values", "속성과 값", "Attributes and values"),
    ("v_completed", "내 값", "Your values"),
    ("v_complete", "모두 있음", "complete"),
    ("v_incomplete", "빠진 값 있음", "incomplete"),
    ("v_new_locker", "새 보관함", "New locker"),
    ("v_create_locker", "보관함 만들기", "Create locker"),
    ("v_new_credential", "새 자격 증명", "New credential"),
    ("v_create_credential", "자격 증명 만들기", "Create credential"),
    ("v_attr_help", "이름을 적은 줄만 속성이 됩니다. 표준 속성은 값이 하나(소유자가 입력), 사용자별 속성은 사용자마다 자기 값을 입력합니다.", "Only rows with a name become attributes. A standard attribute has one value (set by the owner); a per-user attribute holds each user's own value."),
    ("v_new_attribute", "새 속성", "New attribute"),
    ("v_kind", "종류", "Kind"),
    ("v_standard", "표준 (값 하나)", "Standard (one value)"),
    ("v_user_provided", "사용자별 (userProvided)", "Per user (userProvided)"),
    ("v_masked", "마스킹", "Masked"),
    ("v_value", "값", "Value"),
    ("v_change_value", "값 입력·변경", "Set or change"),
    ("v_reveal_help", "값은 가려져 있고, 이 화면을 여는 것만으로는 어떤 값도 읽지 않습니다. 값 보기와 복사는 누를 때마다 감사 기록에 남는 읽기입니다.", "Values are masked, and opening this page reads none of them. Each Reveal and each Copy is a read recorded in the audit at that moment."),
    ("v_remask_after", "보인 값이 다시 가려지기까지:", "A revealed value is masked again after"),
    ("v_shown_static", "표시 중 (다른 화면으로 가면 사라집니다)", "Shown (gone when you leave this page)"),
    ("v_masked_now", "가려짐", "Masked"),
    ("v_shown_now", "표시 중, 다시 가려지기까지", "Shown; masked again in"),
    ("v_copied", "클립보드에 복사했습니다 (감사 기록됨).", "Copied to the clipboard (audited)."),
    ("v_reveal_failed", "값을 읽지 못했습니다:", "The value could not be read:"),
    ("v_values_sealed", "금고가 봉인되어 값을 읽거나 쓸 수 없습니다. 봉인이 해제되면 값 보기를 사용할 수 있습니다.", "The vault is sealed: values cannot be read or written. Reveal works again once it is unsealed."),
    ("v_sealed_value", "봉인됨: 읽을 수 없음", "Sealed: cannot be read"),
    ("v_value_changed", "마지막 변경", "Last changed"),
    ("v_no_value", "값이 없습니다.", "No value yet."),
    ("v_no_own_value", "내 값이 아직 없습니다.", "You have no value yet."),
    ("v_new_value_for", "새 값:", "New value for"),
    ("v_value_for", "값:", "Value for"),
    ("v_your_value_for", "내 값:", "Your value for"),
    ("v_owner_sets", "표준 속성의 값은 소유자가 입력합니다.", "The owner sets a standard attribute's value."),
    ("v_you_are", "나와의 관계", "You are"),
    ("vw_owner", "소유자", "owner"),
    ("vw_consumer", "소비자 역할 보유", "consumer"),
    ("vw_locker_admin_member", "보관함 관리 구성원", "managing member of its locker"),
    ("vw_admin", "보관함 관리자 (Locker Admin)", "Locker Admin"),
    ("vw_no_values", "이 자격 증명의 값은 소유자와 보관함 소비자 역할만 읽을 수 있습니다. 보관함이나 자격 증명을 관리하는 권한으로는 값을 읽을 수 없습니다.", "The values of this credential are for its owner and the consumers of its locker only; administering lockers or credentials never grants reading them."),
    ("v_in_locker", "이 자격 증명이 있는 보관함:", "This credential is in the locker"),
    ("v_not_in_locker", "보관함에 들어 있지 않습니다.", "It is in no locker."),
    ("v_put_in_locker", "보관함에 넣기", "Put into locker"),
    ("v_put_in", "내 자격 증명 넣기", "Put in a credential"),
    ("v_take_out", "보관함에서 빼기", "Take out of the locker"),
    ("v_add", "추가", "Add"),
    ("v_remove", "제거", "Remove"),
    ("v_add_member", "구성원 추가·권한 변경", "Add a member or change permissions"),
    ("v_add_consumer", "소비자 역할 추가", "Add consumer role"),
    ("v_user", "사용자", "User"),
    ("v_user_help", "사용자 ID, 또는 #번호", "User ID, or #number"),
    ("v_you", "나", "you"),
    ("v_perms", "권한", "Permissions"),
    ("vp_own", "소유 (own)", "own"),
    ("vp_manage", "관리 (manage)", "manage"),
    ("vp_participate", "참여 (participate)", "participate"),
    ("v_edit_locker", "보관함 수정", "Edit locker"),
    ("v_delete_locker", "보관함 삭제", "Delete locker"),
    ("v_delete_confirm", "이 보관함을 삭제합니다 (비어 있어야 합니다)", "Delete this locker (it must be empty)"),
    ("v_edit_credential", "자격 증명 수정", "Edit credential"),
    ("v_delete_credential", "자격 증명 삭제", "Delete credential"),
    ("v_delete_confirm_cred", "속성과 모든 값을 함께 삭제합니다", "Delete it with its attributes and all values"),
    ("v_transfer", "소유자 이전", "Transfer owner"),
    ("v_new_owner", "새 소유자", "New owner"),
    ("v_transfer_button", "이전", "Transfer"),
    ("v_conflict", "충돌: 이 화면을 연 뒤 다른 사람이 먼저 바꿨습니다.", "Conflict: someone changed this after you opened the page."),
    ("v_conflict_help", "저장되지 않았고, 입력한 내용은 아래에 그대로 있습니다. 확인한 뒤 다시 저장하면 내 입력이 적용됩니다.", "Nothing was saved, and what you typed is kept below. Check it, then save again to apply your input."),
    ("v_now_stored", "지금 저장된 내용", "Stored now"),
    ("v_merged", "내가 바꾸지 않은 칸은 지금 저장된 내용으로 채웠고, 양쪽이 모두 바꾼 칸은 아래에 지금 저장된 내용을 함께 보여 줍니다.", "Fields you did not change now show what is stored; where both of you changed a field, what is stored now is shown under it."),
    ("v_refused", "처리하지 않았습니다 (아무것도 바뀌지 않음):", "Not done (nothing changed):"),
    ("vd_unchanged", "바뀐 내용이 없습니다.", "Nothing to change."),
    ("vd_unsealed", "금고의 봉인을 해제했습니다.", "The vault is unsealed."),
    ("vd_mode_changed", "연결 모드를 바꿨습니다.", "The mode is changed."),
    ("vd_locker_created", "보관함을 만들었습니다.", "Locker created."),
    ("vd_locker_saved", "보관함을 저장했습니다.", "Locker saved."),
    ("vd_locker_deleted", "보관함을 삭제했습니다.", "Locker deleted."),
    ("vd_member_saved", "구성원 권한을 저장했습니다.", "Member saved."),
    ("vd_member_removed", "구성원을 제거했습니다.", "Member removed."),
    ("vd_consumer_added", "소비자 역할을 추가했습니다.", "Consumer role added."),
    ("vd_consumer_removed", "소비자 역할을 제거했습니다.", "Consumer role removed."),
    ("vd_cred_added", "자격 증명을 보관함에 넣었습니다.", "Credential put into the locker."),
    ("vd_cred_removed", "자격 증명을 보관함에서 뺐습니다.", "Credential taken out of the locker."),
    ("vd_cred_created", "자격 증명을 만들었습니다. 이제 값을 입력하세요.", "Credential created. Now set its values."),
    ("vd_cred_saved", "자격 증명을 저장했습니다.", "Credential saved."),
    ("vd_cred_transferred", "소유자를 이전했습니다.", "Owner transferred."),
    ("vd_cred_deleted", "자격 증명을 삭제했습니다.", "Credential deleted."),
    ("vd_value_saved", "값을 저장했습니다.", "Value saved."),
    ("vd_value_deleted", "값을 삭제했습니다.", "Value deleted."),
];

impl Lang {
    /// The text of `key` in this language; the key itself when there is none (a unit test
    /// keeps that from happening in a template).
    pub fn t(&self, key: &str) -> &'static str {
        match TEXT.iter().find(|(k, _, _)| *k == key) {
            Some((_, ko, en)) => match self {
                Lang::Ko => ko,
                Lang::En => en,
            },
            None => "?",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "ko" => Some(Lang::Ko),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language of a request: the user's choice, else the browser's first preference
    /// between Korean and English, else Korean.
    pub fn of_headers(headers: &HeaderMap) -> Lang {
        if let Some(l) = cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
            return l;
        }
        let Some(accept) = headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
        else {
            return Lang::Ko;
        };
        let mut best: Option<(f32, Lang)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let lang = if tag == "ko" || tag.starts_with("ko-") {
                Lang::Ko
            } else if tag == "en" || tag.starts_with("en-") {
                Lang::En
            } else {
                continue;
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::Ko, |(_, l)| l)
    }

    pub fn of_parts(parts: &Parts) -> Lang {
        Lang::of_headers(&parts.headers)
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_once_and_complete_in_both_languages() {
        let mut seen = std::collections::HashSet::new();
        for (k, ko, en) in TEXT {
            assert!(seen.insert(*k), "key {k} is twice in TEXT");
            assert!(!ko.is_empty() && !en.is_empty(), "key {k} lacks a text");
        }
    }

    /// Every `t("...")` in a template names a key of [`TEXT`].
    #[test]
    fn every_key_a_template_uses_exists() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/console");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("t(\"").skip(1) {
                let key = &piece[..piece.find('"').unwrap()];
                assert!(
                    TEXT.iter().any(|(k, _, _)| *k == key),
                    "{}: key {key:?} is not in TEXT",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} keys found in the templates");
    }

    #[test]
    fn accept_language_picks_the_preferred_of_korean_and_english() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::ACCEPT_LANGUAGE, v.parse().unwrap());
            Lang::of_headers(&m)
        };
        assert_eq!(h("en-US,en;q=0.9"), Lang::En);
        assert_eq!(h("ko-KR,en;q=0.5"), Lang::Ko);
        assert_eq!(h("fr, en;q=0.3, ko;q=0.2"), Lang::En);
        assert_eq!(h("fr"), Lang::Ko);
        assert_eq!(Lang::of_headers(&HeaderMap::new()), Lang::Ko);
        let mut m = HeaderMap::new();
        m.insert(axum::http::header::ACCEPT_LANGUAGE, "en".parse().unwrap());
        m.insert(
            axum::http::header::COOKIE,
            "a=b; haechi_lang=ko".parse().unwrap(),
        );
        assert_eq!(Lang::of_headers(&m), Lang::Ko);
    }
}
