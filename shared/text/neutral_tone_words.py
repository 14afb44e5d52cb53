"""Word lists for Mandarin neutral tone (轻声), compiled for this project.

NEUTRAL_TONE_WORDS: common words whose last syllable is read in the neutral tone although
the dictionary reading of that character has a full tone (东西 dōngxi, 明白 míngbai).
pypinyin's phrase data marks only a few of these, so tone sandhi applies the list.

NEVER_NEUTRAL_WORDS: words that look like the neutral-tone patterns (reduplication, a final
子/们) but keep the full tone (男子 nánzǐ, 人人 rénrén).
"""

from __future__ import annotations

# Grouped loosely by meaning to keep the list maintainable; order carries no meaning.
_NEUTRAL = """
东西 事情 意思 消息 时候 地方 名字 学生 先生 朋友 客人 亲戚 师傅 徒弟
伙计 姑娘 小伙子 丈夫 媳妇 女婿 老婆 妯娌 连襟 闺女 外甥 侄女 亲家 爷爷
奶奶 姥姥 姥爷 舅舅 舅妈 婶婶 叔叔 伯伯 姑姑 哥哥 弟弟 姐姐 妹妹 妈妈
爸爸 娃娃 宝宝 公公 婆婆 太太 老爷 少爷 大爷 大娘 相公 丫头 和尚 喇嘛
菩萨 神仙 妖精 状元 秀才 大夫 郎中 裁缝 木匠 铁匠 石匠 皮匠 鞋匠 瓦匠
厨子 护士 街坊 对头 冤家 把式 把戏 戏法 买卖 生意 行当 行李 衣服 衣裳
被子 褥子 枕头 帽子 鞋子 袜子 裤子 裙子 褂子 袖子 领子 扣子 口袋 篮子
盒子 箱子 柜子 桌子 椅子 凳子 杯子 盘子 碟子 筷子 勺子 锅子 瓶子 罐子
镜子 梳子 刷子 剪子 钳子 锤子 锯子 斧子 钉子 绳子 带子 袋子 包袱 包子
饺子 馒头 窝头 点心 豆腐 芝麻 粮食 庄稼 高粱 萝卜 茄子 葫芦 蘑菇 核桃
石榴 橘子 栗子 柿子 李子 桃子 杏子 葡萄 甘蔗 黄瓜 头发 眉毛 眼睛 鼻子
耳朵 嘴巴 下巴 脑袋 脖子 胳膊 指头 指甲 骨头 舌头 嗓子 喉咙 肚子 肠子
屁股 脊梁 巴掌 拳头 身子 个子 模样 样子 影子 日子 月亮 太阳 星星 云彩
早上 晚上 晌午 夜里 家里 屋里 城里 心里 外头 里头 前头 后头 上头 下头
东边 西边 南边 北边 那边 这边 院子 房子 屋子 窗户 门槛 篱笆 栅栏 柱子
梯子 胡同 铺子 摊子 园子 村子 寨子 码头 牌楼 耗子 蚊子 虫子 蝎子 蛤蟆
骆驼 狮子 兔子 猴子 鸽子 燕子 鸭子 畜生 牲口 尾巴 翅膀 爪子 蹄子 叶子
稻子 麦子 谷子 种子 粽子 棍子 竿子 杆子 轮子 车子 担子 本子 册子 稿子
曲子 调子 名堂 名声 学问 规矩 道理 道士 脾气 福气 力气 运气 客气 小气
阔气 和气 秀气 俗气 志气 神气 晦气 喜欢 明白 清楚 糊涂 聪明 漂亮 利索
利落 干净 暖和 凉快 热闹 冷清 安生 舒服 舒坦 痛快 结实 厚道 实在 老实
踏实 大方 麻烦 难为 热乎 别扭 窝囊 邋遢 啰嗦 唠叨 嘀咕 念叨 叨唠 琢磨
寻思 思量 商量 打听 打量 打扮 打算 打发 收拾 招牌 吩咐 嘱咐 告诉 答应
认识 知道 记得 觉得 晓得 懂得 值得 舍得 免得 省得 认得 见识 应酬 应付
张罗 折腾 倒腾 扑腾 闹腾 耽搁 耽误 糟蹋 欺负 委屈 折磨 称呼 合同 估计
比方 巴结 奉承 报酬 交情 情形 动静 动弹 玩意 把手 风筝 灯笼 喇叭 琵琶
胡琴 唢呐 笛子 棋子 骰子 故事 笑话 告示 体面 面子 架子 底子 底下 底细
世故 本事 能耐 手艺 工夫 功夫 关系 脑子 心思 念头 主意 点子 机灵 伶俐
俏皮 淘气 苗条 时辰 岁数 软和 硬朗 硬实 壮实 宽敞 亮堂 敞亮 稀罕 乐呵
凑合 将就 溜达 蹦跶 哆嗦 咳嗽 喷嚏 疙瘩 窟窿 补丁 爱人 招呼
""".split()

_NEVER_NEUTRAL = """
男子 女子 君子 孔子 庄子 孟子 墨子 荀子 韩非子 分子 原子 电子 质子 中子 量子 因子
粒子 离子 卵子 精子 学子 游子 赤子 天子 太子 公子 王子 才子 弟子 莲子 瓜子 石子 算子
人人 天天 年年 个个 家家户户 花花草草 熙熙攘攘 哈哈 呵呵 嘻嘻 嘿嘿 娃哈哈 冉冉 袅袅 莘莘
佼佼 恳恳 兢兢 业业 青青 默默 渐渐 悄悄 纷纷 频频 死死 整整 足足 区区 堂堂 虎虎 幺幺
以下 以上 落地 耕地 局地 干嘛 留得
""".split()

NEUTRAL_TONE_WORDS = frozenset(_NEUTRAL)
NEVER_NEUTRAL_WORDS = frozenset(_NEVER_NEUTRAL)
